"""Timer-driven modal operators (Generate, Re-key, Render Preview, runtime install/check).

Blender calls modal() on each timer event; the timer is removed on every exit path, including cancel()
(file load, quit). Headless (no window) there is no timer: tests call modal() by hand.
"""


class TimerModal:
    _timer = None

    def _start_timer_modal(self, context, interval: float):
        wm = context.window_manager
        if context.window is not None:
            self._timer = wm.event_timer_add(interval, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _end(self, context, result):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        return result
