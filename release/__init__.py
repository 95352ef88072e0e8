"""The release pipeline: keys, the signed TUF repository, publishing, serving.

`release` writes a repository of static files (`metadata/` and `targets/`); any static HTTP
server can serve it. Keys live apart from what is served.
"""

from release._errors import ReleaseError
from release._keys import KeyStore
from release._publish import publish, repository_status
from release._repository import FileRepository, init_repository

__all__ = [
    "FileRepository",
    "KeyStore",
    "ReleaseError",
    "init_repository",
    "publish",
    "repository_status",
]
