// The build key of this library, kept in its bytes: fastmask reads it from the file before loading a
// _C and refuses one built for another fastmask, torch, CUDA or Python (loading such a library can
// crash the process). setup.py and the just-in-time build pass the key hex-encoded, a single token
// that no shell or build tool re-quotes.
#define FASTMASK_STRINGIFY_(x) #x
#define FASTMASK_STRINGIFY(x) FASTMASK_STRINGIFY_(x)
#ifndef FASTMASK_BUILD_KEY
#define FASTMASK_BUILD_KEY 0x  // built without a key: never loaded
#endif

extern "C" __attribute__((used, visibility("default"))) const char fastmask_build_key[] =
    "fastmask-build-key:" FASTMASK_STRINGIFY(FASTMASK_BUILD_KEY) ":end";
