/* The C shim: DPDK's static-inline functions, macros and thread-locals that
 * bindgen cannot emit, wrapped as real functions. Naming rule: lb_<name>
 * wraps <name>. Every function here is exercised by tests/shim.rs. */
#ifndef LB_DPDK_SHIM_H
#define LB_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_prefetch.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_dev.h>

/** Receive up to `n` packets from queue `queue` of `port`. */
uint16_t lb_rte_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
/** Hand up to `n` packets to queue `queue` of `port`; returns how many the driver took. */
uint16_t lb_rte_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
/** One mbuf from `mp`, reset, or NULL when the pool is empty. */
struct rte_mbuf *lb_rte_pktmbuf_alloc(struct rte_mempool *mp);
/** `n` mbufs from `mp` into `mbufs`: 0 on success, negative when the pool cannot give all. */
int lb_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
/** Return a (possibly chained) mbuf to its pool. */
void lb_rte_pktmbuf_free(struct rte_mbuf *m);
/** Start of the packet data in the first segment (rte_pktmbuf_mtod). */
void *lb_rte_pktmbuf_mtod(struct rte_mbuf *m);
/** Data length of the first segment. */
uint16_t lb_rte_pktmbuf_data_len(const struct rte_mbuf *m);
/** Total packet length over all segments. */
uint32_t lb_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
/** Grow the packet by `len` bytes at the tail; NULL when there is no tailroom. */
char *lb_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/** Remove `len` bytes from the tail: 0 on success, -1 when the last segment is shorter. */
int lb_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
/** Free space after the data in the last segment. */
uint16_t lb_rte_pktmbuf_headroom(const struct rte_mbuf *m);

char *lb_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);

uint16_t lb_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
/** Number of segments in the chain. */
uint16_t lb_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
/** The mempool an mbuf belongs to. */
struct rte_mempool *lb_rte_pktmbuf_pool(const struct rte_mbuf *m);
/** Prefetch into all cache levels. */
void lb_rte_prefetch0(const void *p);
/** The calling thread's lcore id, or LCORE_ID_ANY (UINT32_MAX) for a non-EAL thread. */
unsigned lb_rte_lcore_id(void);
/** The time stamp counter. */
uint64_t lb_rte_rdtsc(void);
/** The calling thread's rte_errno. */
int lb_rte_errno(void);
/** RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP (function-like macros bindgen cannot evaluate). */
uint64_t lb_rss_hf_ip_tcp_udp(void);
/** RTE_MBUF_DEFAULT_BUF_SIZE. */
uint16_t lb_mbuf_default_buf_size(void);

#endif
