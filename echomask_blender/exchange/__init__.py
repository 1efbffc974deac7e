"""Takes in and out of Blender: import (rig, keys, speech strip), FBX/BVH/npz export, and the menu operators."""
