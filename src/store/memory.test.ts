import { MemoryStore } from './memory.ts';
import { runStoreConformance } from './store.case.ts';

runStoreConformance('MemoryStore', () => new MemoryStore());
