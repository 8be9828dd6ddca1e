"""The Forward tag each file's lines are sent under: the seam a fork changes to route files
apart (a tag per file, per directory, per app) without touching the reader or the sender.

A tag rule is made once at start from the configured tag (`FLUENT_TAG`) and then called
with the followed path of each file in a batch (a batch may hold the lines of several
files; the rule runs once per file per batch, never per line). `TAG_RULE` names the rule
the shipper uses, as "module:function" of this package; the default, `tags:fixed`, sends
every file under `FLUENT_TAG`. A fork writes its rule in a module of its own and points
`TAG_RULE` at it.

File names are the app's, and the app is not trusted: `Tags` checks every tag a rule
returns and sends the lines of a file whose tag the collector would refuse (empty, over
1,024 characters, not printable or not encodable: the batch would be retried forever)
under `FLUENT_TAG` instead, counted and logged. A rule that raises is treated the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from prometheus_client import Counter

from patterns.common.forward.protocol import valid_tag
from patterns.common.registry import imported

log = logging.getLogger(__name__)

TagRule = Callable[[str], str]  # a followed path -> the tag of its lines

# The rule the shipper uses: "module:function" in patterns/sidecar/shipper/, the function
# taking FLUENT_TAG and returning a TagRule.
TAG_RULE = "tags:fixed"

def fixed(tag: str) -> TagRule:
    """Every file's lines under FLUENT_TAG."""
    return lambda _path: tag


def load_rule(name: str, tag: str) -> TagRule:
    """The rule `name` ("module:function" in this package) made for FLUENT_TAG `tag`."""
    make = cast(Callable[[str], TagRule], imported(name, __package__ or ""))
    return make(tag)


class Tags:
    """The tag of `path`'s lines: the rule's, or `default` when the rule's is unusable."""

    def __init__(self, rule: TagRule, default: str, refused: Counter) -> None:
        self.rule = rule
        self.default = default
        self.refused = refused
        self.refusals = 0

    def __call__(self, path: str) -> str:
        try:
            tag = self.rule(path)
        except Exception as exc:  # a fork's bug must not stop shipping
            return self._refuse(path, f"the tag rule raised {type(exc).__name__}: {exc}")
        if tag == self.default or valid_tag(tag):
            return tag
        return self._refuse(path, f"the tag rule returned an unusable tag: {tag!r:.100}")

    def _refuse(self, path: str, why: str) -> str:
        self.refused.inc()
        self.refusals += 1
        if self.refusals & (self.refusals - 1) == 0:  # the 1st, 2nd, 4th, 8th...: bounded
            log.warning(
                "tag refused, sent under FLUENT_TAG",
                extra={"file": path, "why": why, "refusals": self.refusals},
            )
        return self.default
