"""The training workers' process-group rendezvous, bound to the rank-0 worker's address only.

Ray Train's own setup (``_TorchBackend.on_start``) has rank 0 start torch.distributed's
TCPStore from ``MASTER_ADDR``/``MASTER_PORT``. torch (2.13 checked) binds that server to
every interface (``::``) whatever host it is given: on the local Ray that was the one
listener not on loopback, and on a cluster it listens on every network of the node.

torch's one hook for the bind address is ``TCPStore(master_listen_fd=...)``: a socket
already bound and listening. ``BoundStoreTorchConfig`` uses it. The rank-0 worker binds a
socket to its node's address (127.0.0.1 on Quarry's local Ray), hosts the store on it, and
every worker joins the process group through that store (``init_process_group(store=...)``).
Everything else (backend choice, the torch env vars, shutdown) stays Ray's.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

# The rank-0 worker's (socket, store): alive as long as the worker process, like the store
# torch would have started itself.
_HOSTED: list = []


def _host_store(world_size: int, timeout_s: int) -> tuple[str, int]:
    """In the rank-0 worker: listen on this node's address only and host the store there."""
    import ray
    from torch.distributed import TCPStore

    address = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(max(128, world_size))
    port = sock.getsockname()[1]
    store = TCPStore(address, port, world_size, is_master=True, timeout=timedelta(seconds=timeout_s),
                     wait_for_workers=False, master_listen_fd=sock.fileno())
    _HOSTED[:] = [sock, store]
    return address, port


def _join_process_group(backend: str, world_rank: int, world_size: int, address: str, port: int,
                        timeout_s: int) -> None:
    import torch.distributed as dist
    from torch.distributed import TCPStore

    timeout = timedelta(seconds=timeout_s)
    if backend == "nccl":
        # Ray's setup does the same: fail on a timed-out collective instead of hanging.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    store = _HOSTED[1] if world_rank == 0 else TCPStore(address, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


class _BoundStoreBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: "BoundStoreTorchConfig") -> None:
        import ray

        backend = backend_config.backend  # TorchTrainer has set it (nccl with GPUs, else gloo)
        if backend not in ("gloo", "nccl"):
            super().on_start(worker_group, backend_config)  # other backends: Ray's own setup
            return
        world = len(worker_group)
        address, port = worker_group.execute_single(0, _host_store, world_size=world,
                                                    timeout_s=backend_config.timeout_s)

        def set_master(addr: str, p: int) -> None:
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(p)  # for libraries that read them

        worker_group.execute(set_master, addr=address, p=port)
        worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK, WORLD_SIZE, ...
        ray.get([worker_group.execute_single_async(i, _join_process_group, backend=backend, world_rank=i,
                                                   world_size=world, address=address, port=port,
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(world)])


@dataclass
class BoundStoreTorchConfig(TorchConfig):
    """``TorchConfig`` whose rendezvous store listens on the rank-0 node's address only."""

    @property
    def backend_cls(self):
        return _BoundStoreBackend
