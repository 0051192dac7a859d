"""The documented mapping from OSM tags to the pipeline's categories.

Rules are **ordered, first match wins** (the reference assigns categories last-wins, so a primary road with a
sidewalk became ``sidewalk`` and a school became ``amenity``). Each rule is ``(key, values, category)``;
``values = None`` matches any value of the key. The same function serves the offline (PBF/XML) and the
online (osmnx) readers, so both produce the same categories.

Street categories (from ``highway``):

=================================================  =============
``highway``                                        category
=================================================  =============
motorway, motorway_link                            motorway
trunk, primary, secondary, tertiary (+ ``_link``)  major_road
residential, living_street, unclassified, road     residential
service                                            service_road
pedestrian, footway, steps, corridor               pedestrian
path, bridleway, cycleway, track                   path
=================================================  =============

Place categories (POIs and AOIs), in rule order: food, education, healthcare, financial, culture, religious,
emergency, government, transport, accommodation, tourism, historic, commercial (``shop``), business
(``office``), craft, park, leisure, sport, green, funeral, landuse, natural, amenity, building.
"""

from __future__ import annotations

from collections.abc import Mapping

#: ``highway`` values that are streets, with their street category.
STREET_CATEGORIES: dict[str, str] = {
    "motorway": "motorway",
    "motorway_link": "motorway",
    "trunk": "major_road",
    "trunk_link": "major_road",
    "primary": "major_road",
    "primary_link": "major_road",
    "secondary": "major_road",
    "secondary_link": "major_road",
    "tertiary": "major_road",
    "tertiary_link": "major_road",
    "residential": "residential",
    "living_street": "residential",
    "unclassified": "residential",
    "road": "residential",
    "service": "service_road",
    "pedestrian": "pedestrian",
    "footway": "pedestrian",
    "steps": "pedestrian",
    "corridor": "pedestrian",
    "path": "path",
    "bridleway": "path",
    "cycleway": "path",
    "track": "path",
}

_FOOD = frozenset({"restaurant", "cafe", "bar", "pub", "fast_food", "food_court", "ice_cream", "biergarten"})
_EDUCATION = frozenset({"school", "university", "college", "kindergarten", "library", "language_school"})
_HEALTH = frozenset({"hospital", "clinic", "doctors", "dentist", "pharmacy", "veterinary"})
_FINANCE = frozenset({"bank", "atm", "bureau_de_change"})
_CULTURE = frozenset({"theatre", "cinema", "arts_centre", "concert_hall"})
_TRANSPORT = frozenset(
    {
        "parking",
        "bicycle_parking",
        "bus_station",
        "ferry_terminal",
        "fuel",
        "car_rental",
        "taxi",
        "bicycle_rental",
        "charging_station",
        "parking_entrance",
    }
)
_GREEN_LANDUSE = frozenset(
    {"grass", "forest", "meadow", "recreation_ground", "village_green", "allotments", "orchard", "flowerbed"}
)
_PARKS = frozenset({"park", "garden", "playground", "nature_reserve", "dog_park"})

#: Ordered rules ``(key, values or None for any, category)``; first match wins.
PLACE_RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("amenity", _FOOD, "food"),
    ("amenity", _EDUCATION, "education"),
    ("building", frozenset({"school", "university", "college", "kindergarten"}), "education"),
    ("amenity", _HEALTH, "healthcare"),
    ("healthcare", None, "healthcare"),
    ("amenity", _FINANCE, "financial"),
    ("amenity", _CULTURE, "culture"),
    ("tourism", frozenset({"museum", "gallery"}), "culture"),
    ("amenity", frozenset({"place_of_worship"}), "religious"),
    ("building", frozenset({"church", "cathedral", "chapel", "mosque", "temple", "synagogue"}), "religious"),
    ("amenity", frozenset({"police", "fire_station"}), "emergency"),
    ("amenity", frozenset({"townhall", "courthouse"}), "government"),
    ("office", frozenset({"government"}), "government"),
    ("amenity", _TRANSPORT, "transport"),
    ("public_transport", None, "transport"),
    ("railway", frozenset({"station", "halt", "tram_stop", "subway_entrance"}), "transport"),
    ("highway", frozenset({"bus_stop"}), "transport"),
    ("tourism", frozenset({"hotel", "hostel", "motel", "guest_house", "camp_site", "apartment"}), "accommodation"),
    ("tourism", None, "tourism"),
    ("historic", None, "historic"),
    ("shop", None, "commercial"),
    ("office", None, "business"),
    ("craft", None, "craft"),
    ("leisure", _PARKS, "park"),
    ("leisure", None, "leisure"),
    ("sport", None, "sport"),
    ("landuse", _GREEN_LANDUSE, "green"),
    ("landuse", frozenset({"cemetery"}), "funeral"),
    ("amenity", frozenset({"grave_yard"}), "funeral"),
    ("landuse", None, "landuse"),
    ("natural", None, "natural"),
    ("amenity", None, "amenity"),
    ("building", None, "building"),
)

#: Keys whose presence makes an OSM object a candidate POI (node) or AOI (area).
PLACE_KEYS: frozenset[str] = frozenset(rule[0] for rule in PLACE_RULES)

#: Names the reference drops as noise (street furniture mapped with a generic name).
NOISE_NAMES: frozenset[str] = frozenset({"bike parking", "seating"})

#: Name tags tried in order when ``name`` is missing.
NAME_KEYS: tuple[str, ...] = ("name", "official_name", "alt_name", "short_name", "loc_name", "name:en")


def street_category(highway: str | None) -> str | None:
    """Street category for a ``highway`` value, or ``None`` when the way is not a street."""
    if highway is None:
        return None
    return STREET_CATEGORIES.get(highway)


def place_category(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """
    Category of a POI or AOI from its tags.

    Parameters
    ----------
    tags
        OSM tags of one object (``{"amenity": "cafe", "name": "..."}``).

    Returns
    -------
    category, tag
        The category and the ``key=value`` tag that decided it, or ``None`` when no rule matches.
    """
    for key, values, category in PLACE_RULES:
        value = tags.get(key)
        if value is None or value == "no":
            continue
        if values is None or value in values:
            return category, f"{key}={value}"
    return None


def first_name(tags: Mapping[str, str]) -> str | None:
    """The first non-empty name among :data:`NAME_KEYS`, stripped, or ``None``."""
    for key in NAME_KEYS:
        value = tags.get(key)
        if value and value.strip():
            return value.strip()
    return None


def address(tags: Mapping[str, str]) -> str | None:
    """``"Street 12"`` from ``addr:street`` and ``addr:housenumber``, or ``None`` without a street."""
    street = tags.get("addr:street")
    if not street:
        return None
    number = tags.get("addr:housenumber")
    return f"{street} {number}" if number else street


_LEVEL_HEIGHT_M = 3.2


def height_m(tags: Mapping[str, str]) -> float | None:
    """
    Height in metres from ``height`` (``"12"``, ``"12 m"``, ``"40'"`` is ignored) or ``building:levels``.

    Returns ``None`` when neither tag gives a usable positive number.
    """
    raw = tags.get("height")
    if raw:
        text = raw.strip().lower().removesuffix("m").strip().replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and 0 < value < 1000:
            return value
    levels = tags.get("building:levels")
    if levels:
        try:
            count = float(levels.replace(",", "."))
        except ValueError:
            return None
        if 0 < count < 300:
            return count * _LEVEL_HEIGHT_M
    return None
