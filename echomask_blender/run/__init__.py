"""Running the generator from Blender: Generate (modal, polled, one undoable Apply), the warm worker, the
speech source (strips or a file), the runtime (which Python runs torch, installing it) and timer modals."""
