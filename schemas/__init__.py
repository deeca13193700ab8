"""The pandera schemas, where the design card puts them; they live in `pipeline.core.schemas`.

Kept so that `import schemas` finds them as the top-level layout promises. Nothing inside
`pipeline` imports this package (the core must not reach outside itself).
"""

from pipeline.core.schemas import conversions, status

__all__ = ["conversions", "status"]
