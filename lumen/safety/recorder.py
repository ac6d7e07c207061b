"""Safety Music recording: the MIDI and WAV file sinks of the loop (output.midi_file/wav_file).

`Recorder` keeps the last `recording_s` seconds of final levels and rewrites the files
whole (through a .tmp file and a rename, so a reader never sees half a file) every
RECORD_EVERY_S seconds and when the loop closes. Rendering is lumen/safety/sound.py's.
"""

import collections
import os
import sys
import time
from pathlib import Path

from lumen.safety import sound

RECORD_EVERY_S = 10.0


class Recorder:
    """The MIDI/WAV sinks: keep the last `keep_s` seconds of levels, rewrite the files."""

    def __init__(self, smap, tick_s, keep_s, midi_path=None, wav_path=None):
        self.smap, self.tick_s = smap, tick_s
        self.midi_path, self.wav_path = midi_path, wav_path
        self.buf = collections.deque(maxlen=max(2, int(keep_s / tick_s)))
        self._last = time.monotonic()

    def add(self, t, level):
        self.buf.append((t, level))
        if time.monotonic() - self._last >= RECORD_EVERY_S:
            self.write()

    def write(self):
        self._last = time.monotonic()
        segs = sound.segments(list(self.buf), self.tick_s)
        if not segs:
            return
        try:
            self._write(segs)
        except OSError as e:  # a full disk: the recording is rewritten whole next time
            print(
                f"[safety] warning: recording not written ({e.strerror or e})",
                file=sys.stderr,
                flush=True,
            )

    def _write(self, segs):
        if self.midi_path:
            tmp = f"{self.midi_path}.tmp"
            Path(tmp).parent.mkdir(parents=True, exist_ok=True)
            sound.render_midi(segs, self.smap).save(tmp)
            os.replace(tmp, self.midi_path)
        if self.wav_path:
            tmp = f"{self.wav_path}.tmp"
            sound.write_wav(tmp, *sound.render_wav(segs, self.smap))
            os.replace(tmp, self.wav_path)
