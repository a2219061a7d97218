/**
 * The etcd v3 services as grpc-js service definitions, built from the one protobufjs root the
 * rest of the code uses (proto-files.ts). Shaped as @grpc/proto-loader's `loadSync` would give
 * them (same paths, streaming flags, object conversion), without proto-loader: it brings its own
 * protobufjs copy, parses the protos a second time and builds descriptors nobody here reads
 * (~6 MiB of an idle member's RSS, measured in bench/RESULTS.md).
 */
import type * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { etcdProtoRoot } from '../proto-files.js';

/** A method as grpc-js's Server.addService and makeClientConstructor take it. */
export interface EtcdMethodDefinition extends grpc.MethodDefinition<object, object> {
  originalName: string;
}
export type EtcdServiceDefinition = Record<string, EtcdMethodDefinition>;

export const ETCD_SERVICE_NAMES = ['KV', 'Watch', 'Lease', 'Cluster', 'Maintenance', 'Auth'] as const;
export type EtcdServiceName = (typeof ETCD_SERVICE_NAMES)[number];

/**
 * How decoded messages look: camelCase fields, int64 as decimal strings, enums by name, every
 * field present (defaults filled), and each set oneof named by its own virtual field.
 */
export const ETCD_OBJECT_OPTIONS: protobuf.IConversionOptions = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

function serializer(type: protobuf.Type): (value: object) => Buffer {
  return (value) => {
    // proto-loader's guard: fromObject would take an array's indexes as field numbers.
    if (Array.isArray(value)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    // Under Node protobufjs writes into a Buffer (its BufferWriter), as grpc-js wants.
    return type.encode(type.fromObject(value)).finish() as Buffer;
  };
}

function deserializer(type: protobuf.Type): (bytes: Buffer) => object {
  return (bytes) => type.toObject(type.decode(bytes), ETCD_OBJECT_OPTIONS);
}

/** lodash's camelCase, as proto-loader names methods for grpc-js's aliases: "HashKV" is "hashKv". */
function camelCase(name: string): string {
  const words = name.match(/[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+/g) ?? [name];
  return words.map((w, i) => (i === 0 ? w.toLowerCase() : w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())).join('');
}

function serviceDefinition(service: protobuf.Service): EtcdServiceDefinition {
  const def: EtcdServiceDefinition = {};
  for (const method of service.methodsArray) {
    const request = method.resolvedRequestType!;
    const response = method.resolvedResponseType!;
    def[method.name] = {
      path: `/etcdserverpb.${service.name}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: serializer(request),
      requestDeserialize: deserializer(request),
      responseSerialize: serializer(response),
      responseDeserialize: deserializer(response),
      originalName: camelCase(method.name),
    };
  }
  return def;
}

let services: Map<EtcdServiceName, EtcdServiceDefinition> | undefined;

/** One etcd service's definition (made once and shared: copy a method to change it). */
export function etcdService(name: EtcdServiceName): EtcdServiceDefinition {
  if (services === undefined) {
    const root = etcdProtoRoot();
    services = new Map(ETCD_SERVICE_NAMES.map((n) => [n, serviceDefinition(root.lookupService(`etcdserverpb.${n}`))]));
  }
  return services.get(name)!;
}

/** Every etcd service keyed as proto-loader keys them ("etcdserverpb.KV"), for grpc.loadPackageDefinition. */
export function etcdPackageDefinition(): Record<string, EtcdServiceDefinition> {
  return Object.fromEntries(ETCD_SERVICE_NAMES.map((n) => [`etcdserverpb.${n}`, etcdService(n)]));
}
