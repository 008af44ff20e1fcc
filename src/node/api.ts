/**
 * @module node/api
 * The NetManager's HTTP API on a unix socket (mode 0600: only root, like upstream's), with upstream's
 * routes and bodies: POST /register, /container/deploy, /container/undeploy (and /docker/undeploy). Every
 * route but /register answers 400 before registration. GET /status is oaknet's view for operators.
 */
import { chmodSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { Type } from 'typebox';
import type { Logger } from 'pino';
import { UnsupportedError } from '../errors.ts';
import { createApiServer } from '../protocol/http-server.ts';
import {
  ContainerDeploy,
  ContainerDeployReply,
  ContainerUndeploy,
  nodePaths,
  NodeStatus,
  Register,
} from '../protocol/node-api.ts';
import { ErrorReply } from '../protocol/root-api.ts';
import { makePrivateDir } from '../store/private-files.ts';
import type { NetManager } from './netmanager.ts';

const errors = {
  400: ErrorReply,
  404: ErrorReply,
  409: ErrorReply,
  500: ErrorReply,
  501: ErrorReply,
  507: ErrorReply,
};
const empty = { 200: Type.Null(), ...errors };

function buildNodeApp(nm: NetManager, log: Logger) {
  const app = createApiServer(log, 1 << 16);

  app.post(nodePaths.register, { schema: { body: Register, response: empty } }, async (req, reply) => {
    await nm.register(req.body.client_id, req.body.cluster_address, req.body.token);
    return reply.status(200).send(null);
  });

  app.post(
    nodePaths.deploy,
    { schema: { body: ContainerDeploy, response: { 200: ContainerDeployReply, ...errors } } },
    (req) => nm.deploy(req.body),
  );

  for (const path of [nodePaths.undeploy, nodePaths.dockerUndeploy]) {
    app.post(path, { schema: { body: ContainerUndeploy, response: empty } }, async (req, reply) => {
      await nm.undeploy(req.body.serviceName, req.body.instanceNumber);
      return reply.status(200).send(null);
    });
  }

  // upstream's unikernel routes exist so a node engine gets a clear answer, not a 404
  for (const path of [nodePaths.unikernelDeploy, nodePaths.unikernelUndeploy]) {
    app.post(path, { schema: { response: errors } }, () => {
      throw new UnsupportedError(
        'unikernel instances are not supported by oaknet yet (containers are: /container/deploy)',
      );
    });
  }

  app.get(nodePaths.status, { schema: { response: { 200: NodeStatus } } }, () => nm.statusWithHost());

  return app;
}

/** Serves the API on the unix socket (mode 0600) and, when tcpPort is given, on 127.0.0.1:tcpPort too. */
export async function startNodeApi(nm: NetManager, log: Logger, socketPath: string, tcpPort?: number) {
  const apps = [buildNodeApp(nm, log)];
  makePrivateDir(dirname(socketPath));
  rmSync(socketPath, { force: true });
  await apps[0]!.listen({ path: socketPath });
  chmodSync(socketPath, 0o600);
  if (tcpPort !== undefined) {
    const tcp = buildNodeApp(nm, log);
    await tcp.listen({ host: '127.0.0.1', port: tcpPort });
    apps.push(tcp);
  }
  return {
    async close() {
      for (const app of apps) await app.close();
      rmSync(socketPath, { force: true });
    },
  };
}
