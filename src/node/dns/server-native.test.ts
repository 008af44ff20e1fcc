/** The node's DNS server with UDP through the addon's batched sockets (recvmmsg/sendmmsg), as oaknet node runs it. */
import { loadNativeIo } from '../../dataplane/tun/native.ts';
import { dnsServerCases } from './server.case.ts';

dnsServerCases(loadNativeIo());
