"""Track C Safety Music (blueprint section 13): RMB health as levels, and as sound.

- levels: the pure band mapping (residual entropy, rollback ratio -> CALM/TENSE/ALERT)
- inputs: where the two values come from (the RMB event log, or the exporter's /metrics)
- loop: load_config and SafetyLoop, one event a tick to logs/safety_music_events.jsonl
- recorder: the loop's MIDI/WAV file sinks; sound: the sound bridge map, MIDI, WAV, OSC
- render: a stretch of the event channel -> .wav and .mid

The processes are safety/safety_music_loop.py and safety/safety_music_render.py.
"""
