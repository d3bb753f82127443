// Loads the compiled addon (build/Release/elisa_kvm.node) once for the whole package.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import bindings = require('bindings');

export interface NativeAddon {
  getApiVersion(): number;
}

export const native: NativeAddon = bindings('elisa_kvm');
