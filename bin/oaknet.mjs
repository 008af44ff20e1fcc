#!/usr/bin/env node
// The oaknet command: runs the TypeScript sources through tsx's loader (transpiled once, cached).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
