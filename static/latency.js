// Echo latency, measured the way a person hears it: short tone bursts are generated with WebAudio
// and sent instead of the microphone, and each one is timed from the moment it is generated to
// the moment it reaches the playback (after the optional echo delay), in one AudioContext's
// clock, so the figure includes encoding, the network, the server, the jitter buffer and decoding.

const TONE_HZ = 1000;
const BURST_S = 0.06;
/** Playback level that counts as "the burst arrived" (the tone is sent at 0.8). */
const THRESHOLD = 0.15;
/** A burst that has not arrived by then is counted as lost. */
const GIVE_UP_S = 2.5;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Sends `bursts` tone bursts on `sender` (an RTCRtpSender; its track is put back afterwards) and
 * times each one at `tap` (an AudioNode carrying what the user hears). Resolves with the times in
 * milliseconds of the bursts that arrived, in order.
 */
export async function measure(ctx, sender, tap, { bursts = 5, gapMs = 500, extraDelayS = 0, cancelled = () => false } = {}) {
  const oscillator = ctx.createOscillator();
  oscillator.frequency.value = TONE_HZ;
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const out = ctx.createMediaStreamDestination();
  oscillator.connect(gain).connect(out);
  oscillator.start();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 256;
  tap.connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const level = () => {
    analyser.getFloatTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v));
    return peak;
  };
  const original = sender.track;
  await sender.replaceTrack(out.stream.getAudioTracks()[0]);
  const times = [];
  try {
    // Let what the microphone sent before the switch play out (plus any echo delay).
    await waitQuiet(level, 300 + extraDelayS * 1000);
    for (let i = 0; i < bursts && !cancelled(); i++) {
      const start = ctx.currentTime + 0.05;
      gain.gain.setValueAtTime(0.8, start);
      gain.gain.setValueAtTime(0, start + BURST_S);
      const arrived = await until(() => cancelled() || (ctx.currentTime > start && level() > THRESHOLD),
        (GIVE_UP_S + extraDelayS) * 1000);
      if (cancelled()) break;
      if (arrived) times.push(Math.round((ctx.currentTime - start) * 1000));
      // The burst's tail must be gone before the next one is timed.
      await waitQuiet(level, gapMs);
    }
  } finally {
    // Back to the microphone (a closed connection refuses; nothing to restore then).
    await sender.replaceTrack(original).catch(() => {});
    oscillator.stop();
    tap.disconnect(analyser);
  }
  return times;
}

/** The median of `values` (undefined for none). */
export function median(values) {
  if (!values.length) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : Math.round((sorted[mid - 1] + sorted[mid]) / 2);
}

/** Polls `condition` every 2 ms (finer than animation frames) for up to `ms`. */
async function until(condition, ms) {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (condition()) return true;
    await sleep(2);
  }
  return false;
}

/** Waits at least `ms`, and then until the playback has been quiet for 100 ms (at most 3 s more). */
async function waitQuiet(level, ms) {
  await sleep(ms);
  const deadline = performance.now() + 3000;
  let quietSince = performance.now();
  while (performance.now() < deadline && performance.now() - quietSince < 100) {
    if (level() > THRESHOLD / 2) quietSince = performance.now();
    await sleep(5);
  }
}

/**
 * Plays `stream` through `ctx` after `delayS` seconds at `volume`, for the delayed echo; returns
 * the node after the delay (what the user hears) and a way to change the volume and to stop.
 */
export function delayedPlayback(ctx, stream, delayS, volume) {
  const source = ctx.createMediaStreamSource(stream);
  const delay = ctx.createDelay(Math.max(1, delayS));
  delay.delayTime.value = delayS;
  const gain = ctx.createGain();
  gain.gain.value = volume;
  source.connect(delay).connect(gain).connect(ctx.destination);
  return {
    tap: delay,
    setVolume: (v) => (gain.gain.value = v),
    stop: () => source.disconnect(),
  };
}
