// Loaded with `node --import` by `npm run test:unit`: any attempt to load a native addon fails, so the unit
// tests prove that the code they cover runs without the compiled addon.
process.dlopen = (module, filename) => {
  throw new Error(`test:unit runs without native addons, but ${filename} was loaded`);
};
