"""Buttons that cannot run say why: an operator's `disabled_reason(context)` (None = it can run) feeds
poll() and poll_message_set (the tooltip), and the panel draws the same text under the button."""


class DisabledReasonPoll:
    @classmethod
    def disabled_reason(cls, context) -> str | None:
        return None

    @classmethod
    def poll(cls, context):
        reason = cls.disabled_reason(context)
        if reason:
            cls.poll_message_set(reason)
        return reason is None
