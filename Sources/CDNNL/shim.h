// oneDNN 2.x C API (Debian libdnnl-dev; no pkg-config file).
#include <oneapi/dnnl/dnnl.h>
