"""AIP-122 resource names: parsing with field-aware errors."""

from __future__ import annotations

import re

from listboss_common.errors import invalid_field

# Ids are the platform's (numeric product ids, producer slugs) or ours (tag ids
# "{product}.{key}"): letters, digits and - _ . are enough and keep names URL-safe.
_SEGMENT = r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})"


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[a-z_]+\}", _SEGMENT, template) + "$")


class ResourcePattern:
    def __init__(self, template: str):
        self.template = template
        self._regex = _pattern(template)

    def parse(self, name: str, field: str = "name") -> tuple[str, ...]:
        match = self._regex.match(name or "")
        if match is None:
            raise invalid_field(field, f"must be a resource name of the form {self.template}, got {name!r}")
        return match.groups()

    def format(self, *ids: str) -> str:
        parts = iter(ids)
        return re.sub(r"\{[a-z_]+\}", lambda _: next(parts), self.template)


PRODUCER = ResourcePattern("producers/{producer}")
PRODUCT = ResourcePattern("producers/{producer}/products/{product}")
SEGMENTATION = ResourcePattern("producers/{producer}/products/{product}/segmentations/{segmentation}")
CONTACT = ResourcePattern("producers/{producer}/contacts/{contact}")
TAG = ResourcePattern("producers/{producer}/tags/{tag}")
HISTORY_EVENT = ResourcePattern("producers/{producer}/products/{product}/events/{event}")


_ID = re.compile("^" + _SEGMENT + "$")


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can be one segment of a resource name."""
    return _ID.match(value) is not None


def canonical_product_id(raw: str) -> str:
    """The one spelling of a product id: the platform sends the same product as
    0, "0" or "00000", and tags and history must land on one product.
    isascii() keeps non-ASCII digits such as "²" out of the rewrite."""
    product_id = raw.strip()
    if product_id.isdigit() and product_id.isascii():
        product_id = product_id.lstrip("0") or "0"
    return product_id
