"""The map methods of the gRPC server API through a client generated from proto/api.proto.

Usage: grpc_map_client.py PROTO_DIR GRPC_ADDR API_KEY CHANNEL

Publishes three keys, removes one, reads the state in pages of one, checks map_stats, clears
the map. Prints "N checks passed" and exits 0, or raises.
"""

import importlib
import sys
import tempfile

from grpc_tools import protoc
import grpc

proto_dir, addr, key, ch = sys.argv[1:5]
out = tempfile.mkdtemp(prefix="gyre-grpc-map-")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                  f"{proto_dir}/api.proto"])
assert rc == 0, f"grpc_tools.protoc failed with {rc}"
sys.path.insert(0, out)
pb = importlib.import_module("api_pb2")
stub = importlib.import_module("api_pb2_grpc").CentrifugoApiStub(grpc.insecure_channel(addr))
md = [("authorization", "apikey " + key)]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1
    print("ok", what)


for i, k in enumerate(["a", "b", "c"]):
    r = stub.MapPublish(pb.MapPublishRequest(channel=ch, key=k, data=b'{"n":%d}' % i, tags={"t": k}),
                        metadata=md, timeout=10)
    check(not r.HasField("error") and r.result.offset == i + 1 and r.result.epoch, f"map_publish {k}: {r}")
r = stub.MapRemove(pb.MapRemoveRequest(channel=ch, key="b"), metadata=md, timeout=10)
check(r.result.offset == 4, f"map_remove: {r}")
keys, cursor = [], ""
while True:
    r = stub.MapReadState(pb.MapReadStateRequest(channel=ch, cursor=cursor, limit=1), metadata=md, timeout=10)
    check(not r.HasField("error") and len(r.result.entries) == 1, f"a page: {r}")
    e = r.result.entries[0]
    keys.append((e.key, e.data, dict(e.tags)))
    cursor = r.result.cursor
    if not cursor:
        break
check(keys == [("a", b'{"n":0}', {"t": "a"}), ("c", b'{"n":2}', {"t": "c"})], f"state: {keys}")
r = stub.MapReadState(pb.MapReadStateRequest(channel=ch, key="c"), metadata=md, timeout=10)
check([e.key for e in r.result.entries] == ["c"] and not r.result.cursor, f"one key: {r}")
r = stub.MapReadState(pb.MapReadStateRequest(channel=ch, revision_epoch="other"), metadata=md, timeout=10)
check(r.error.code == 112, f"another epoch: {r}")
# The change stream: every change, a removal included; after a position; newest first.
r = stub.MapReadStream(pb.MapReadStreamRequest(channel=ch, limit=-1), metadata=md, timeout=10)
stream = [(e.key, e.offset, e.removed) for e in r.result.entries]
check(stream == [("a", 1, False), ("b", 2, False), ("c", 3, False), ("b", 4, True)] and r.result.offset == 4,
      f"map_read_stream: {r}")
epoch = r.result.epoch
r = stub.MapReadStream(pb.MapReadStreamRequest(channel=ch, since_offset=2, since_epoch=epoch, limit=10),
                       metadata=md, timeout=10)
check([e.offset for e in r.result.entries] == [3, 4], f"since 2: {r}")
r = stub.MapReadStream(pb.MapReadStreamRequest(channel=ch, limit=2, reverse=True), metadata=md, timeout=10)
check([e.offset for e in r.result.entries] == [4, 3], f"reverse: {r}")
r = stub.MapReadStream(pb.MapReadStreamRequest(channel=ch, since_offset=1, since_epoch="other", limit=10),
                       metadata=md, timeout=10)
check(r.error.code == 112, f"since another epoch: {r}")
r = stub.MapStats(pb.MapStatsRequest(channel=ch), metadata=md, timeout=10)
check(r.result.num_keys == 2, f"map_stats: {r}")
# The map methods inside a batch, each answered in its own member.
cmds = [
    pb.Command(map_publish=pb.MapPublishRequest(channel=ch, key="a", data=b'1', key_mode="if_new")),
    pb.Command(map_remove=pb.MapRemoveRequest(channel=ch, key="zz")),
    pb.Command(map_read_state=pb.MapReadStateRequest(channel=ch, key="a")),
    pb.Command(map_read_stream=pb.MapReadStreamRequest(channel=ch, limit=1, reverse=True)),
    pb.Command(map_stats=pb.MapStatsRequest(channel=ch)),
]
r = stub.Batch(pb.BatchRequest(commands=cmds), metadata=md, timeout=10)
rep = r.replies
check(len(rep) == 5 and rep[0].map_publish.suppressed and rep[0].map_publish.suppress_reason == "key_exists",
      f"batch map_publish: {r}")
check(rep[1].map_remove.suppress_reason == "key_not_found", f"batch map_remove: {r}")
check([e.key for e in rep[2].map_read_state.entries] == ["a"], f"batch map_read_state: {r}")
check([e.offset for e in rep[3].map_read_stream.entries] == [4], f"batch map_read_stream: {r}")
check(rep[4].map_stats.num_keys == 2, f"batch map_stats: {r}")
stub.MapClear(pb.MapClearRequest(channel=ch), metadata=md, timeout=10)
r = stub.MapStats(pb.MapStatsRequest(channel=ch), metadata=md, timeout=10)
check(r.result.num_keys == 0, f"map_stats after map_clear: {r}")
r = stub.MapPublish(pb.MapPublishRequest(channel="plain:x", key="k", data=b"1"), metadata=md, timeout=10)
check(r.error.code == 107, f"not a map channel: {r}")
print(f"{checks} checks passed")
