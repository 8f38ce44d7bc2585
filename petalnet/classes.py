"""The 104 flower classes of the "Petals to the Metal" competition, in its index order.

The competition notebook's list has trailing spaces on 'cyclamen ' and 'hippeastrum ';
they are stripped here, and lookups by name ignore case, surrounding spaces and
'_' versus ' ' so folder names like ``common_tulip`` resolve too.
"""
from petalnet.errors import PetalnetError

CLASSES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "wild geranium",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle",  # 0-9
    "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe-flower", "purple coneflower", "peruvian lily", "balloon flower", "giant white arum lily",  # 10-19
    "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",  # 20-29
    "carnation", "garden phlox", "love in the mist", "cosmos", "alpine sea holly",
    "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip", "lenten rose",  # 30-39
    "barberton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "daisy", "common dandelion",  # 40-49
    "petunia", "wild pansy", "primula", "sunflower", "lilac hibiscus",
    "bishop of llandaff", "gaura", "geranium", "orange dahlia", "pink-yellow dahlia",  # 50-59
    "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush", "californian poppy",
    "osteospermum", "spring crocus", "iris", "windflower", "tree poppy",  # 60-69
    "gazania", "azalea", "water lily", "rose", "thorn apple",
    "morning glory", "passion flower", "lotus", "toad lily", "anthurium",  # 70-79
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily",  # 80-89
    "hippeastrum", "bee balm", "pink quill", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",  # 90-99
    "trumpet creeper", "blackberry lily", "common tulip", "wild rose",  # 100-103
)
NUM_CLASSES = len(CLASSES)


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


_INDEX = {_key(n): i for i, n in enumerate(CLASSES)}


def class_name(index: int) -> str:
    """Name of competition class ``index`` (0..103)."""
    if not 0 <= int(index) < NUM_CLASSES:
        raise PetalnetError(f"class index {index} is outside 0..{NUM_CLASSES - 1}")
    return CLASSES[int(index)]


def class_index(name: str) -> int:
    """Competition index of a class name (case, spaces and underscores do not matter)."""
    try:
        return _INDEX[_key(name)]
    except KeyError:
        raise PetalnetError(f"unknown flower class {name!r}: not one of the competition's 104 names") from None
