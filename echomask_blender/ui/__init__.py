"""What the animator sees: the EchoMask sidebar panel, the add-on preferences and the disabled-reason poll."""
