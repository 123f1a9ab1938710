"""Ingestion: turning files (PDFs, images, videos) into pages, images and clips to embed.

``mmrag.ingest.readers`` is the decoding layer: pure functions that take a file and a
:class:`mmrag.config.IngestConfig` and yield :class:`~mmrag.ingest.records.DecodedItem` records
(or :class:`~mmrag.ingest.records.DecodeError` records saying what could not be read and why).
``mmrag.ingest.sources`` turns user inputs (paths, globs, URIs) into files to read.
"""
