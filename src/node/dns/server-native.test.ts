/** The node's DNS server with UDP through the addon's batched sockets (recvmmsg/sendmmsg). */
import { loadNativeIo } from '../../dataplane/tun/native.ts';
import { dnsServerCases, inProcess } from './server.case.ts';

dnsServerCases('batched UDP', inProcess(loadNativeIo()));
