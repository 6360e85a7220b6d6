"""AIP-122 resource names: parsing with field-aware errors.

Every id in a name (``{producer}``, ``{product}``, ...) is at most :data:`MAX_ID_LENGTH`
characters, so a name is at most its template's fixed text plus that much per id. A name
that is too long is refused before any pattern runs, naming the field and the limit; an id
that is too long names the id and the limit; neither error repeats more than a short prefix
of what was sent (:func:`listboss_common.errors.quoted`).
"""

from __future__ import annotations

import re
from typing import Final

from listboss_common.errors import invalid_field, quoted

#: The longest id any segment of a resource name may hold.
MAX_ID_LENGTH: Final = 128

# Ids are the platform's (numeric product ids, producer slugs) or ours (tag ids
# "{product}.{key}"): letters, digits and - _ . are enough and keep names URL-safe.
_SEGMENT = r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _pattern(template: str, segment: str) -> re.Pattern[str]:
    return re.compile("^" + _PLACEHOLDER.sub(lambda _: segment, template) + "$")


class ResourcePattern:
    def __init__(self, template: str):
        self.template = template
        self._regex = _pattern(template, _SEGMENT)
        # The same shape with ids of any length: tells "an id is too long" from "not this kind of name".
        self._shape = _pattern(template, "([^/]+)")
        self._id_names = tuple(_PLACEHOLDER.findall(template))
        placeholders = len(self._id_names)
        self.max_length = len(_PLACEHOLDER.sub("", template)) + placeholders * MAX_ID_LENGTH

    def parse(self, name: str, field: str = "name") -> tuple[str, ...]:
        name = name or ""
        if len(name) > self.max_length:
            raise invalid_field(
                field,
                f"must be a resource name of the form {self.template}, at most {self.max_length} characters "
                f"(each id at most {MAX_ID_LENGTH}); got {len(name)} characters",
            )
        match = self._regex.match(name)
        if match is not None:
            return match.groups()
        shape = self._shape.match(name)
        if shape is not None:
            for id_name, value in zip(self._id_names, shape.groups(), strict=True):
                if len(value) > MAX_ID_LENGTH:
                    raise invalid_field(
                        field, f"the {id_name} id must be at most {MAX_ID_LENGTH} characters; got {len(value)}"
                    )
        raise invalid_field(field, f"must be a resource name of the form {self.template}, got {quoted(name)}")

    def format(self, *ids: str) -> str:
        parts = iter(ids)
        return _PLACEHOLDER.sub(lambda _: next(parts), self.template)


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
