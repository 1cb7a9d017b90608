"""Model events: ``publish_on_save`` (signals), ``publish_changes`` (statement
triggers) and ``publish_context``."""
