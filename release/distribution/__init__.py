"""Distribution of a repository: the development server, the sync to object storage, offline
bundles and the offline installer's build."""

from greenlight.release.distribution._bundle import BundleResult, build_bundle
from greenlight.release.distribution._installer import build_installer, write_payload
from greenlight.release.distribution._serve import RepositoryServer, serving

__all__ = [
    "BundleResult",
    "RepositoryServer",
    "build_bundle",
    "build_installer",
    "serving",
    "write_payload",
]
