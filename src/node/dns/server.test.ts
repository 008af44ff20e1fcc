/** The node's DNS server with UDP through node:dgram (the path without the addon; runs in test:unit). */
import { dnsServerCases, inProcess } from './server.case.ts';

dnsServerCases('node:dgram', inProcess());
