// The etcd service definitions built from our protobufjs root must be what @grpc/proto-loader
// (its own protobufjs 7) gave the server before: same methods and paths, and, for random
// messages of every request and response type, the same decoded objects and encodings that
// mean the same message.
import t from 'tap';
import fc from 'fast-check';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { isDeepStrictEqual } from 'node:util';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO, etcdProtoRoot } from '../../core/net/proto-files.js';
import { ETCD_SERVICE_NAMES, etcdPackageDefinition, etcdService } from '../../core/net/etcd/grpc-definitions.js';

// The options the server gave proto-loader (written out: not ETCD_OBJECT_OPTIONS, under test).
const loaded = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
const loaderService = (name: string): protoLoader.ServiceDefinition => loaded[`etcdserverpb.${name}`] as protoLoader.ServiceDefinition;

/** Objects of `type` as protobufjs's fromObject takes them, every field kind the etcd protos use. */
function objectArb(type: protobuf.Type, depth: number): fc.Arbitrary<Record<string, unknown>> {
  const scalar = (field: protobuf.Field): fc.Arbitrary<unknown> | undefined => {
    const resolved = field.resolve().resolvedType;
    if (resolved instanceof protobuf.Enum) return fc.constantFrom(...Object.keys(resolved.values));
    if (resolved instanceof protobuf.Type) return depth > 0 ? objectArb(resolved, depth - 1) : undefined;
    switch (field.type) {
      case 'string':
        return fc.string({ maxLength: 8 });
      case 'bytes':
        return fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b));
      case 'bool':
        return fc.boolean();
      case 'int64':
        return fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String);
      case 'uint64':
        return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String);
      case 'int32':
        return fc.integer();
      case 'uint32':
        return fc.nat();
      default:
        throw new Error(`field type ${field.type} of ${type.name}.${field.name} has no arbitrary here`);
    }
  };
  const inOneof = new Set(type.oneofsArray.flatMap((o) => o.fieldsArray.map((f) => f.name)));
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of type.fieldsArray) {
    if (inOneof.has(field.name)) continue;
    const arb = scalar(field);
    if (arb !== undefined) fields[field.name] = field.repeated ? fc.array(arb, { maxLength: 3 }) : arb;
  }
  const oneofs = type.oneofsArray.map((o) =>
    fc.oneof(fc.constant({}), ...o.fieldsArray.flatMap((f) => (scalar(f) === undefined ? [] : [scalar(f)!.map((v) => ({ [f.name]: v }))]))),
  );
  return fc.tuple(fc.record(fields, { requiredKeys: [] }), ...oneofs).map(([plain, ...chosen]) => Object.assign({}, plain, ...chosen));
}

t.test('every etcd method as proto-loader defined it: path, streaming, name', async (t) => {
  for (const name of ETCD_SERVICE_NAMES) {
    const ours = etcdService(name);
    const theirs = loaderService(name);
    t.same(Object.keys(ours).sort(), Object.keys(theirs).sort(), `${name}: the same methods`);
    for (const [method, d] of Object.entries(theirs)) {
      const o = ours[method]!;
      t.same(
        { path: o.path, requestStream: o.requestStream, responseStream: o.responseStream, originalName: o.originalName },
        { path: d.path, requestStream: d.requestStream, responseStream: d.responseStream, originalName: d.originalName },
        `${name}.${method}`,
      );
    }
  }
  t.same(Object.keys(etcdPackageDefinition()).sort(), ETCD_SERVICE_NAMES.map((n) => `etcdserverpb.${n}`).sort());
});

t.test('random messages of every method decode to the same objects and encode to the same message', async (t) => {
  const root = etcdProtoRoot();
  let checked = 0;
  for (const name of ETCD_SERVICE_NAMES) {
    const service = root.lookupService(`etcdserverpb.${name}`);
    for (const method of service.methodsArray) {
      const ours = etcdService(name)[method.name]!;
      const theirs = loaderService(name)[method.name]!;
      const sides = [
        [method.resolvedRequestType!, ours.requestDeserialize, theirs.requestDeserialize, ours.requestSerialize, theirs.requestSerialize],
        [method.resolvedResponseType!, ours.responseDeserialize, theirs.responseDeserialize, ours.responseSerialize, theirs.responseSerialize],
      ] as const;
      for (const [type, decode, loaderDecode, encode, loaderEncode] of sides) {
        const run = fc.check(
          fc.property(objectArb(type, 3), (object) => {
            const bytes = Buffer.from(type.encode(type.fromObject(object)).finish());
            const decoded = decode(bytes);
            const loaderDecoded = loaderDecode(bytes);
            // proto-loader's protobufjs 7 also wrote fields at their default; the same message
            // either way, and ours is the canonical encoding (as Go's, etcd's, writes it).
            const encoded = encode(decoded);
            return isDeepStrictEqual(decoded, loaderDecoded) && isDeepStrictEqual(decode(encoded), decode(loaderEncode(loaderDecoded))) && encoded.equals(bytes);
          }),
          { numRuns: 40 },
        );
        t.notOk(run.failed, `${name}.${method.name}: ${type.name} decoded and encoded alike`, { counterexample: run.counterexample });
        checked++;
      }
    }
  }
  t.ok(checked >= 60, `request and response types of every method checked (${checked})`);
});
