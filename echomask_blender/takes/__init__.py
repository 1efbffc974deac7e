"""Takes on the rig: the bulk key writer (keys), takes as NLA tracks (nla: play, solo, A/B, delete, read
back) and the tools that make a new take from one (rekey: re-key, simplify keys, scale intensity)."""
