"""The one error type for bad job configuration: it names the field and the rule broken."""

from __future__ import annotations


class ConfigError(ValueError):
    """A job, datafeed, filter or calendar body breaks one of Elastic's rules.

    `field` is a dotted path into the body (`analysis_config.detectors[0].field_name`), `rule` a short
    stable id (`field_name_required`). The REST API turns it into a 400, the CLI into exit status 2.
    """

    def __init__(self, field: str, rule: str, message: str):
        self.field = field
        self.rule = rule
        self.message = message
        super().__init__(f"{field}: {message} [rule: {rule}]")

    def to_elastic(self) -> dict:
        """Elastic's error JSON body for a 400 answer."""
        cause = {"type": "status_exception", "reason": str(self)}
        return {"error": {"root_cause": [cause], **cause}, "status": 400}
