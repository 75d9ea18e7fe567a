"""Pure ML for exprssl: preprocessing, encoders, SSL methods, classifiers, evaluation, checkpoints.

This package imports nothing from ``app`` or ``worker``; numpy/torch in, arrays and state dicts out.
SSL methods are listed in :data:`models.methods.METHODS`.
"""
