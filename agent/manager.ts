/**
 * Starts a manager: the Raft/KV node (core/api/manager-node) and the etcd v3 gRPC API on
 * the client port. The join handshake listens on the gossip port until membership lands.
 */
import type { Logger } from 'pino';
import { ManagerEtcdBackend, removeSnapshotSpools } from '../core/api/etcd-backend.js';
import { ManagerNode } from '../core/api/manager-node.js';
import { boardId } from './board-id.js';
import { EtcdGrpcServer } from '../core/net/etcd/server.js';
import { ClientTlsFiles, checkMemberCanVerify, dialTarget, requiresClientCerts, tlsSource, type ClientTlsSource } from '../core/net/etcd/client-tls.js';
import { parseHostPort } from '../core/net/address.js';
import { parseToken } from '../core/net/token.js';
import type { ConnectionCap } from '../core/net/connection-cap.js';
import { AgentConfig } from './config.js';

export interface RunningManager {
  node: ManagerNode;
  readiness(): { ok: boolean; reason: string };
  /** Watch responses queued on the client port and not yet written, all streams together. */
  watchBufferedBytes(): number;
  /** The client port's bound on request bytes held for unfinished requests (core/net/etcd/request-bytes.ts). */
  requestBytes(): { held: number; waiting: number; refused: number };
  stop(): Promise<void>;
}

export interface ManagerHooks {
  /** This member was removed from the cluster; the agent should stop (as etcd exits), failing if the data dir could not be marked. */
  onRemoved?: (markError?: Error) => void;
  /** Writing to the data dir failed; the agent should stop and exit with an error (as etcd does). */
  onFatal?: (err: Error) => void;
  /** Another live process is this member and started first (a copied data dir); the agent should stop with an error. */
  onDuplicate?: (err: Error) => void;
  /** The agent's Prometheus text, also served on the client port's GET /metrics as etcd does. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** The client port's share of the open files budget (agent/open-files.ts). */
  clientConnections?: ConnectionCap;
}

export async function startManager(
  config: AgentConfig,
  log: Logger,
  hooks: ManagerHooks = {},
): Promise<RunningManager> {
  const { onRemoved, onFatal, onDuplicate, metrics } = hooks;
  // The certificate files are read again when they change, as etcd's are.
  const own = config.clientTls;
  const tls: ClientTlsSource | undefined =
    own?.files === undefined
      ? own && tlsSource(own)
      : new ClientTlsFiles({ ...own, files: own.files }, (outcome) => {
          if (outcome.ok) log.info({ files: own.files }, 'client port: certificate files changed; new connections use them');
          else log.warn({ files: own.files, reason: outcome.reason }, 'client port: certificate files changed but cannot be used; still serving the ones read before');
        });
  const node = await ManagerNode.start({
    name: config.name,
    dataDir: config.dataDir,
    bindAddr: config.bindAddr,
    advertiseAddr: config.advertiseAddr,
    clientPort: config.clientPort,
    clientTls: config.clientTls !== undefined,
    // --auto-tls's certificate is each member's own, signed by no CA: the members forwarding to
    // this one trust it because it is in this member's record (core/net/etcd/member-cert.ts).
    publishedClientCert: config.autoTls !== undefined && tls !== undefined ? () => tls.current().cert.toString('latin1') : undefined,
    peerPort: config.peerPort,
    joinPort: config.gossipPort,
    // The gossip listener owns the gossip port and hands join connections over.
    externalJoin: true,
    bootstrap: config.bootstrap,
    join: config.join,
    token: config.token,
    tickMs: config.tickMs,
    electionTicks: config.electionTicks,
    quotaBytes: config.quotaBackendBytes,
    autoCompaction: config.autoCompaction,
    snapshotEveryEntries: config.snapshotCount,
    snapshotCatchUpEntries: config.snapshotCatchUpEntries,
    authTokenTtlSeconds: config.authTokenTtlSeconds,
    watchProgressNotifyIntervalMs: config.watchProgressNotifyIntervalMs,
    logger: log,
    onRemoved,
    onFatal,
    onDuplicate,
    board: boardId(),
    newBoard: config.newBoard,
  });
  let grpc: EtcdGrpcServer | undefined;
  // A process killed while serving a Snapshot call left its spool file (the store's size) behind.
  const spools = removeSnapshotSpools(config.dataDir);
  if (spools > 0) log.info({ files: spools }, 'removed snapshot spool files a previous run left');
  const backend = new ManagerEtcdBackend(node, tls);
  try {
    grpc = await EtcdGrpcServer.start({
      backend,
      port: config.clientPort,
      host: config.bindAddr,
      tls,
      onInternalError: (err, method) => log.error({ err, method }, 'etcd API internal error'),
      metrics,
      connections: hooks.clientConnections,
    });
  } catch (e) {
    await node.stop();
    throw e;
  }
  const ownAddr = node.members.get(node.id)?.clientAddr;
  if (own !== undefined && ownAddr !== undefined && config.autoTls === undefined) {
    const why = checkMemberCanVerify(own, parseHostPort(dialTarget(ownAddr).hostPort).host);
    if (why !== undefined) log.warn({ certFile: own.files?.cert, why }, 'other members cannot verify this member\'s client certificate: lease keep-alives sent to a follower will fail while this member leads');
  }
  // --auto-tls's certificate is published in this member's record: the others verify it by that.
  // But they present their own when they dial it, which a --trusted-ca-file here did not sign if
  // --auto-tls made it too (alone, nobody forwards to it).
  if (own !== undefined && config.autoTls !== undefined && requiresClientCerts(own) && node.members.size > 1) {
    log.warn(
      { caFile: own.files?.ca, why: 'it requires client certificates the --trusted-ca-file signed, and a member forwarding to it presents its own client-port certificate, which --auto-tls makes self-signed' },
      'members with --auto-tls cannot forward to this member: lease keep-alives sent to them will fail while this member leads',
    );
  }
  const mode = own === undefined ? 'off' : own.clientCertAuth ? 'client certificates required, naming users' : requiresClientCerts(own) ? 'client certificates required' : 'on';
  log.info({ client: `${config.bindAddr}:${config.clientPort}`, tls: mode }, 'etcd API listening');
  // Not the token itself: logs go where the data dir's 0700 does not (journald readers, log
  // shippers), and the token is the cluster's secret (Raft, keyring signing, auth tokens).
  if (config.bootstrap) log.info({ cluster: parseToken(node.tokenString()).digest, dataDir: config.dataDir }, `join token: picloud-node token --data-dir ${config.dataDir} (--worker for workers)`);
  return {
    node,
    readiness: () => node.readiness(),
    watchBufferedBytes: () => grpc?.watchBuffers.bytes ?? 0,
    requestBytes: () => ({ held: grpc?.requestBytes?.heldBytes ?? 0, waiting: grpc?.requestBytes?.waitingStreams ?? 0, refused: grpc?.requestBytes?.refusedStreams ?? 0 }),
    stop: async () => {
      await grpc?.close(500).catch(() => undefined);
      backend.close();
      // Snapshot streams cut short by the close leave their spools (a copy of the store each).
      try {
        removeSnapshotSpools(config.dataDir);
      } catch {
        // the next start removes them
      }
      await node.stop();
    },
  };
}
