"""What the offline twin's city looks like: default building heights by type, façade and sign colours by category,
and the land-cover classes of the ground raster with their colours (used by the scene, the renderer and the facts
of a view)."""

from __future__ import annotations

import numpy as np

# Low building types, with the default height (metres) used when the tags give none.
LOW_BUILDINGS_M: dict[str, float] = {
    "house": 6.5,
    "detached": 6.5,
    "semidetached_house": 6.5,
    "terrace": 7.5,
    "bungalow": 4.5,
    "cabin": 4.0,
    "hut": 3.0,
    "garage": 3.0,
    "garages": 3.0,
    "carport": 2.8,
    "shed": 2.8,
    "roof": 4.0,
    "kiosk": 3.0,
    "farm_auxiliary": 5.0,
    "barn": 6.0,
    "greenhouse": 3.5,
    "service": 3.5,
    "toilets": 3.0,
}
HOUSE_TYPES = frozenset({"house", "detached", "semidetached_house", "bungalow", "cabin", "hut", "terrace"})

# Façade colours (RGB 0..255) by building category; "building" picks from the plaster palette by id.
FACADE_BY_CATEGORY: dict[str, tuple[int, int, int]] = {
    "education": (168, 86, 64),
    "healthcare": (226, 230, 232),
    "financial": (150, 148, 156),
    "culture": (204, 172, 124),
    "religious": (232, 226, 210),
    "emergency": (178, 70, 58),
    "government": (214, 204, 184),
    "transport": (152, 154, 158),
    "accommodation": (196, 160, 134),
    "commercial": (128, 160, 186),
    "business": (118, 136, 158),
    "food": (204, 150, 104),
    "historic": (186, 150, 110),
    "leisure": (150, 176, 160),
    "sport": (160, 170, 182),
    "amenity": (186, 180, 168),
}
PLASTER = np.array(
    [
        (222, 206, 170),
        (201, 182, 152),
        (178, 122, 92),
        (230, 226, 216),
        (190, 194, 198),
        (160, 96, 76),
        (236, 214, 158),
        (152, 150, 144),
        (214, 190, 196),
        (176, 186, 164),
    ],
    dtype=np.float32,
)
WOODEN = np.array([(150, 44, 36), (226, 196, 118), (214, 212, 202), (118, 138, 158), (96, 120, 90)], np.float32)

#: Sign colours by POI category (RGB 0..255).
SIGN_COLORS: dict[str, tuple[int, int, int]] = {
    "food": (196, 36, 40),
    "commercial": (238, 176, 24),
    "financial": (24, 58, 148),
    "healthcare": (24, 150, 64),
    "business": (84, 88, 112),
    "transport": (28, 92, 200),
    "accommodation": (118, 40, 120),
    "culture": (150, 32, 92),
    "tourism": (230, 118, 24),
    "education": (36, 120, 160),
    "amenity": (120, 124, 128),
    "religious": (176, 156, 60),
    "government": (54, 58, 64),
    "historic": (118, 88, 58),
    "leisure": (56, 160, 138),
    "sport": (56, 140, 90),
    "craft": (140, 98, 58),
    "emergency": (210, 30, 30),
    "park": (60, 140, 60),
}
DEFAULT_SIGN = (200, 200, 200)
#: POI categories that show a sign even without a name (shops, cafés, banks, stops...).
SIGN_CATEGORIES = frozenset(SIGN_COLORS) - {"park", "historic", "amenity"}

# Ground classes of the land-cover raster; GREEN_CLASSES and ROAD_CLASSES feed the scene facts.
GROUND_DEFAULT, ROAD_MAJOR, ROAD_MINOR, PAVED, PATH = 0, 1, 2, 3, 4
GRASS, PARK, FOREST, WATER, RESIDENTIAL, INDUSTRIAL, PARKING, CEMETERY, FIELD, PITCH = range(5, 15)
GROUND_PALETTE = np.array(
    [
        (150, 146, 136),  # default: urban ground, kerbs and yards
        (70, 72, 76),  # major road asphalt
        (92, 94, 98),  # minor road asphalt
        (170, 160, 146),  # paved pedestrian area
        (178, 160, 122),  # gravel path
        (104, 150, 70),  # grass
        (86, 140, 62),  # park lawn
        (48, 92, 44),  # forest / wood / scrub
        (62, 100, 140),  # water
        (140, 146, 118),  # residential land use (gardens)
        (136, 132, 128),  # industrial / commercial / retail land use
        (110, 110, 112),  # parking
        (96, 128, 76),  # cemetery
        (168, 158, 100),  # farmland, meadow
        (120, 156, 96),  # pitch
    ],
    dtype=np.float32,
)
GREEN_CLASSES = np.array([GRASS, PARK, FOREST, CEMETERY, FIELD, PITCH])
ROAD_CLASSES = np.array([ROAD_MAJOR, ROAD_MINOR, PAVED])

STREET_GROUND: dict[str, tuple[int, float]] = {  # street category -> (ground class, drawn width in metres)
    "motorway": (ROAD_MAJOR, 16.0),
    "major_road": (ROAD_MAJOR, 11.0),
    "residential": (ROAD_MINOR, 7.0),
    "service_road": (ROAD_MINOR, 4.5),
    "pedestrian": (PAVED, 4.0),
    "path": (PATH, 2.5),
}
AREA_TAG_GROUND: dict[str, int] = {
    "landuse=grass": GRASS,
    "landuse=meadow": FIELD,
    "landuse=farmland": FIELD,
    "landuse=farmyard": FIELD,
    "landuse=forest": FOREST,
    "natural=wood": FOREST,
    "natural=scrub": FOREST,
    "natural=heath": GRASS,
    "natural=grassland": GRASS,
    "natural=water": WATER,
    "landuse=basin": WATER,
    "landuse=reservoir": WATER,
    "landuse=pond": WATER,
    "natural=wetland": GRASS,
    "natural=beach": FIELD,
    "natural=sand": FIELD,
    "landuse=residential": RESIDENTIAL,
    "landuse=industrial": INDUSTRIAL,
    "landuse=commercial": INDUSTRIAL,
    "landuse=retail": INDUSTRIAL,
    "landuse=construction": INDUSTRIAL,
    "landuse=railway": INDUSTRIAL,
    "landuse=cemetery": CEMETERY,
    "amenity=grave_yard": CEMETERY,
    "leisure=pitch": PITCH,
    "amenity=parking": PARKING,
    "landuse=garages": PARKING,
    "public_transport=platform": PAVED,
}
AREA_CATEGORY_GROUND: dict[str, int] = {"park": PARK, "green": GRASS, "funeral": CEMETERY, "sport": PITCH}
