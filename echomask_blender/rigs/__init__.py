"""Rigs: the SMPL-X armature (build, check, bone frames), its skinned mesh from the user's own SMPL-X file,
and the animator's own characters (bone mapping and retargeting, face mapping onto their shape keys)."""
