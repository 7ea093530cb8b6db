"""Network definitions, the checkpoint format and the shared image preprocessing.

Import the modules themselves: this package imports nothing, so a process that only decodes
uploads (``models.images``) or describes a model (``models.metadata``) never loads torch.
"""
