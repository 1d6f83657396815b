"""The protocol core: pure functions and values, no web framework, database, config or network.

Modules follow the atproto specs (https://atproto.com/specs): ``dagcbor``, ``cid`` and ``datamodel``
(data model), ``car``, ``blockstore``, ``mst``, ``commit`` and ``repo`` (repository), ``crypto``
(keys and signatures), ``tid`` and ``syntax`` (identifiers), ``lexicon`` (record validation).
"""
