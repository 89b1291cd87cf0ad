"""Built-in strategies, one file each. Every module here is imported by ``clbench.train.registry``.

To add one: create ``strategies/my_method.py`` with a ``Strategy`` subclass decorated by
``@register("my_method")``; it appears in ``clbench list`` and in the ``all`` grid.
"""
