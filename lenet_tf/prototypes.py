"""The fixed RBF prototypes of LeNet-5: stylized 7x12 bitmaps of the ten digits.

The paper's Figure 3 draws one 7x12 bitmap per character; each RBF output unit's centre is the
bitmap read row by row as 84 values, +1 for ink and -1 for background. They were chosen by hand
and kept fixed so that similar-looking digits (0 and O, 1 and l) get similar codes, and so that
F6's targets lie where the squashing function (range +-1.7159) is not saturated. The bar on the
first row of 0, 2, 4 and 5 is in the figure.
"""

import numpy as np

BITMAP_HEIGHT, BITMAP_WIDTH = 12, 7

# Rows top to bottom, '#' = ink (+1), '.' = background (-1); index = digit.
DIGIT_BITMAPS = (
    """
    .#####.
    .......
    ..###..
    .##.##.
    ##...##
    ##...##
    ##...##
    ##...##
    .##.##.
    ..###..
    .......
    .......
    """,  # 0
    """
    ...##..
    ..###..
    .####..
    ...##..
    ...##..
    ...##..
    ...##..
    ...##..
    ...##..
    .######
    .......
    .......
    """,  # 1
    """
    .#####.
    .......
    .#####.
    ##...##
    #....##
    ....##.
    ..###..
    .##....
    ##.....
    #######
    .......
    .......
    """,  # 2
    """
    #######
    .....##
    ....##.
    ...##..
    ..####.
    .....##
    .....##
    .....##
    ##...##
    .#####.
    .......
    .......
    """,  # 3
    """
    .#####.
    .......
    .......
    .##..##
    .##..##
    ###..##
    ##...##
    ##...##
    ##..###
    .######
    .....##
    .....##
    """,  # 4
    """
    .#####.
    .......
    #######
    ##.....
    ##.....
    .####..
    ..####.
    .....##
    ##...##
    .#####.
    .......
    .......
    """,  # 5
    """
    ..####.
    .##....
    ##.....
    ##.....
    ######.
    ###..##
    ##...##
    ##...##
    ###..##
    .#####.
    .......
    .......
    """,  # 6
    """
    #######
    .....##
    .....##
    ....##.
    ...##..
    ...##..
    ..##...
    ..##...
    ..##...
    ..##...
    .......
    .......
    """,  # 7
    """
    .#####.
    ##...##
    ##...##
    ##...##
    .#####.
    ##...##
    ##...##
    ##...##
    ##...##
    .#####.
    .......
    .......
    """,  # 8
    """
    .#####.
    ##..###
    ##...##
    ##...##
    ##..###
    .######
    .....##
    .....##
    ....##.
    .####..
    .......
    .......
    """,  # 9
)


def digit_bitmaps():
    """Returns the ten bitmaps as a `(10, 12, 7)` float32 array of +1 (ink) and -1."""
    rows = [bitmap.split() for bitmap in DIGIT_BITMAPS]
    return np.array(
        [[[1.0 if c == "#" else -1.0 for c in row] for row in bitmap] for bitmap in rows],
        dtype="float32",
    )


def rbf_prototypes():
    """Returns the RBF centres: the bitmaps flattened row by row, a `(10, 84)` float32 array."""
    return digit_bitmaps().reshape(len(DIGIT_BITMAPS), BITMAP_HEIGHT * BITMAP_WIDTH)
