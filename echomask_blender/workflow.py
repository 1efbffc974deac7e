"""Registration of the animator's workflow: the EchoMask sidebar panel, generation, takes, re-key,
preview, export and the runtime tools (one list, added to the package's register list in __init__.py)."""
from .exchange import export
from .preview import render_preview as preview
from .run import generate_op, generation_run, runtime_ops, worker_service
from .takes import rekey, nla as takes
from . import settings
from .ui import panel

# PropertyGroups first (the panel settings point at them), then operators, UI lists and panels.
CLASSES = (*settings.PROPERTY_CLASSES, *runtime_ops.CLASSES, *generate_op.CLASSES, *takes.CLASSES, *rekey.CLASSES,
           *export.CLASSES, *preview.CLASSES, *worker_service.CLASSES, *panel.PANEL_CLASSES)


def register_properties() -> None:
    settings.attach_properties()


def unregister_properties() -> None:
    """Also stops a running generation or preview and the warm worker: no worker outlives the add-on."""
    run = generation_run.current_run()
    if run is not None and run.job is not None:
        run.job.cancel()
        run.job.close()
    generation_run.forget_runs()
    worker_service.stop()
    preview.finish_preview()
    settings.detach_properties()
