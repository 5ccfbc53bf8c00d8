"""The one place that says how our kfp components are built.

Lightweight components run on the project's own image (infra/docker/Dockerfile.component, which has the
project, NeMo and kfp installed), so `install_kfp_package=False` and imports happen inside the bodies.
Locally, kfp.local's SubprocessRunner runs the same bodies with this interpreter.
"""

from __future__ import annotations

import functools

from kfp import dsl

# Pinned by tag; CI of the image repository replaces the tag with a digest on release.
COMPONENT_IMAGE = "ghcr.io/nemotron-asr-pipeline/component:0.1.0"

component = functools.partial(dsl.component, base_image=COMPONENT_IMAGE, install_kfp_package=False)
