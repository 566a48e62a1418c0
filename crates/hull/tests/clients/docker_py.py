"""docker-py (the Docker SDK for Python) against hulld: each check prints one
line that the Rust test compares with what docker would answer."""
import io
import os
import tarfile
import time

import docker

client = docker.DockerClient(base_url=os.environ["HULL_DOCKER_HOST"])
print("api", client.version()["ApiVersion"])
print("run", client.containers.run("busybox", ["sh", "-c", "echo hello; echo err >&2"], remove=True))

container = client.containers.run(
    "busybox", ["sh", "-c", "echo started; exec sleep 1000"], detach=True, name="py-web",
    labels={"via": "docker-py"},
)
for _ in range(100):
    if b"started" in container.logs():
        break
    time.sleep(0.1)
container.reload()
print("status", container.status, container.name, container.labels["via"])
print("logs", container.logs())
result = container.exec_run(["sh", "-c", "echo in exec; exit 4"])
print("exec", result.exit_code, result.output)
print("list", [c.name for c in client.containers.list(filters={"label": "via=docker-py"})])
container.exec_run(["sh", "-c", "echo py > /py"])
image = container.commit("py-committed", "1", changes=['CMD ["cat", "/py"]'])
print("commit", client.containers.run(image.id, remove=True))
exported = b"".join(container.export())
print("export", "py" in tarfile.open(fileobj=io.BytesIO(exported)).getnames())
client.api.import_image_from_data(exported, repository="py-imported", tag="1")
print("import", client.containers.run("py-imported:1", ["cat", "/py"], remove=True))
container.stop(timeout=1)
container.reload()
print("stopped", container.status, container.attrs["State"]["ExitCode"])
print("wait", container.wait()["StatusCode"])
container.remove()
try:
    client.containers.get("py-web")
    print("removed", False)
except docker.errors.NotFound:
    print("removed", True)
try:
    client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
except docker.errors.ContainerError as error:
    print("failed", error.exit_status)
