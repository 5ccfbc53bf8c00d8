"""kfp.local's DockerRunner (kfp 2.17) returns 0 when a container that failed fast was auto-removed before its
exit code was read: CI's broken-image test saw a step with an ImportError reported SUCCESS."""

from __future__ import annotations

import docker.errors
from kfp.local import docker_task_handler as handler

from pipelines.local import docker_exit_status_fix


class _Container:
    def __init__(self, code: int, gone: bool):
        self.code, self.gone, self.removed = code, gone, False

    def logs(self, stream=True):
        return iter([b"ImportError: libstdc++.so.6\n"])

    def wait(self):
        if self.gone:  # auto_remove=True: the daemon removed it as it exited
            raise docker.errors.NotFound("no such container")
        return {"StatusCode": self.code}

    def remove(self, force=False):
        self.removed = True


class _Client:
    def __init__(self):
        self.images = self
        self.containers = self
        self.made: list[_Container] = []

    def list(self):
        return []

    def pull(self, image):
        pass

    def run(self, image, command, auto_remove, **kw):
        c = _Container(1, gone=auto_remove)
        self.made.append(c)
        return c


def test_a_container_that_failed_fast_is_reported_failed(monkeypatch):
    monkeypatch.setattr(handler, "run_docker_container", handler.run_docker_container)
    assert handler.run_docker_container(_Client(), "img:1", ["x"], {}) == 0  # kfp's own: "assume success"
    docker_exit_status_fix()
    client = _Client()
    assert handler.run_docker_container(client, "img:1", ["x"], {}) == 1
    assert client.made[0].removed  # kept until its exit code was read, then removed
