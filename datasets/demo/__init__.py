"""The built-in demo data: small, learnable sets generated deterministically in the real layouts.

One module per layout (``textures``: ImageNet and Stanford Dogs; ``coco`` and ``coco_shapes``:
COCO; ``celeba``; ``faces``: identities and LFW; ``geo``: geotagged photos), and ``cache``: where
a set is written once, keyed by what generated it.
"""
