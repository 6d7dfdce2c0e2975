"""Backends: memory, local (and, with their extras, s3, gcs, azure).

Each module holds one backend class and a ``from_url(url, **options)``
factory registered under the ``asyncstore.backends`` entry-point group.
"""
