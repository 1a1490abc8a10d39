// What the ring library exports. It is built with hidden visibility (TF's
// libraries are loaded RTLD_GLOBAL, so every stray symbol could collide);
// only what is marked PYFASTQ_API is visible to the modules that link it.
#pragma once

#if defined(PYFASTQ_BUILDING_RING)
#define PYFASTQ_API __attribute__((visibility("default")))
#else
#define PYFASTQ_API
#endif
