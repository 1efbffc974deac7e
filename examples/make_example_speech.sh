#!/usr/bin/env bash
# Re-creates examples/example_speech.wav, the bundled demo speech. It is synthetic (espeak-ng), made by the
# project itself, so no recorded or licensed speech is shipped. Needs: apt-get install espeak-ng sox.
set -euo pipefail
cd "$(dirname "$0")"
text="Hello there! Thanks for coming today. I want to tell you about a little idea.
When people talk, they move. Their hands rise, they shrug, they point at things.
So here is the plan: we listen to the voice, and the character moves with it.
Big words get big gestures. Quiet pauses stay calm. Does that make sense? Great, let's begin."
espeak-ng -v en-us -s 150 -p 45 -g 4 -w /tmp/echomask_example_raw.wav "$text"
sox /tmp/echomask_example_raw.wav -r 16000 -c 1 -b 16 example_speech.wav norm -3
rm -f /tmp/echomask_example_raw.wav
soxi example_speech.wav
