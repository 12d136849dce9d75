//! A panic inside the WebRTC stack while it handles one session ends that session alone.
//!
//! Every call of the media loop into a session's peer connection (a datagram, a timer, a send, a
//! PATCH) runs under [`shielded`]: a panic there (a bug in `rtc` or in whip-echo, reached by what
//! one client sent) is caught, logged once with its message, and the session is torn down with
//! [`EndReason::Panicked`](crate::session::EndReason::Panicked) without another call into its
//! peer connection, whose state the panic may have left half-changed: the loop moves it out of its
//! sessions at once (`MediaLoop::note_panic`), so nothing finds it to call into again, and ends
//! it at the end of the wake-up. What else a shielded call touches (the routes, the sockets, a
//! rate bucket: `flush` sends inside one) is changed one whole step at a time, so a panic in the
//! peer connection between two steps leaves it consistent; the loop and every other session go
//! on. (Without it, one panic ended the loop's thread and with it every session on the port.)

use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a shielded call panicked with.
#[derive(Debug)]
pub(super) struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `f`, catching a panic. Inlined: it is on every packet's path several times, and the
/// unwinding machinery costs nothing until a panic.
#[inline]
pub(super) fn shielded<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panicked)
}

/// The message of a caught panic's payload.
#[cold]
fn panicked(payload: Box<dyn std::any::Any + Send>) -> Panicked {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    Panicked(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_with_its_message() {
        let caught = shielded(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(caught.0, "boom 7");
        assert_eq!(shielded(|| 5).unwrap(), 5);
    }
}
