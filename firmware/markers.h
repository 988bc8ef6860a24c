/* Region markers for exact instruction counts under QEMU (firmware/markers.c). */
#ifndef EP_MARKERS_H_
#define EP_MARKERS_H_

void ep_region_begin(void);
void ep_region_end(void);

#endif /* EP_MARKERS_H_ */
