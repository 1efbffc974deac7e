"""`python -m core lipsync`: put the phone-accurate mouth on a take's face (docs/LIPSYNC.md)."""
from __future__ import annotations

import os

from ..errors import EchoMaskError


def run_cli(args) -> int:
    from ..motion.take import load_take, save_take
    from .lipsync import apply_phone_mouth

    if not 0.0 <= args.strength <= 1.0:
        raise EchoMaskError(f"--strength must be between 0 (unchanged) and 1 (mouth fully from the phones); "
                            f"got {args.strength}.")
    take = load_take(args.take)
    if bool(args.audio) == bool(args.textgrid):
        raise EchoMaskError("Give the phones either as --textgrid ALIGNMENT.TextGrid or as --audio SPEECH "
                            "(recognised with PocketSphinx).")
    if args.textgrid:
        from ..speech.textgrid import read_textgrid_phones

        phones, source = read_textgrid_phones(args.textgrid), "alignment"
    else:
        from ..speech.audio import load_speech
        from ..speech.phones import recognise_phones

        phones, source = recognise_phones(load_speech(args.audio)), "recogniser"
    if not phones:
        raise EchoMaskError("No phones found: the speech is empty or silent.")
    end = max(e for _, e, _ in phones)
    if end < 0.5 * take.duration:
        print(f"warning: the phones cover {end:.1f} s of a {take.duration:.1f} s take; is it the right speech?")
    out = apply_phone_mouth(take, phones, strength=args.strength)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_take(out, args.out)
    closures = sum(1 for _, _, p in phones if p in ("P", "B", "M"))
    print(f"wrote {args.out}: {take.num_frames} frames, {len(phones)} phones from the {source} "
          f"({closures} lip closures), strength {args.strength:g}")
    return 0
