/** The oaknet version reported by every process (kept equal to package.json's). */
export const VERSION = '0.1.0';
