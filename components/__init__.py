"""KFP v2 components: one file per pipeline step, each a thin typed adapter over one ``mdfnet.steps`` function.

Images are ``<registry>/mdfnet-<step>:<mdfnet version>`` (:mod:`components._images`); the registry is read from
``MDFNET_IMAGE_REGISTRY`` when this package is first imported (``pipelines/compile.py --registry`` sets it).
"""
