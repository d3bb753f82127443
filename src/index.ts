// Public API of the package. One line per layer, so branches merge cleanly.
export * from './kvm/index';
export * from './x86/index';
export * from './elisa/hostmode';
export * from './elisa/invm/index';
