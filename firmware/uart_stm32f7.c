/* ep_io.h on the STM32F746G-Discovery: USART1 on the ST-LINK virtual COM port (TX PA9, RX PB7,
 * alternate function 7), 115200 8N1, polled. The core runs from the 16 MHz HSI after reset
 * (SystemCoreClock = 16 MHz, APB2 = core clock), which EP_CORE_CLOCK_HZ states. */
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'

#include <stdint.h>

#include "cortexm_io.h"
#include "ep_io.h"

#ifndef EP_CORE_CLOCK_HZ
#define EP_CORE_CLOCK_HZ 16000000u
#endif
#ifndef EP_UART_BAUD
#define EP_UART_BAUD 115200u
#endif

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB2ENR REG(0x40023844u)
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRH REG(0x40020024u)
#define GPIOB_MODER REG(0x40020400u)
#define GPIOB_AFRL REG(0x40020420u)
#define USART1_CR1 REG(0x40011000u)
#define USART1_BRR REG(0x4001100Cu)
#define USART1_ISR REG(0x4001101Cu)
#define USART1_ICR REG(0x40011020u)
#define USART1_RDR REG(0x40011024u)
#define USART1_TDR REG(0x40011028u)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)

void ep_io_init(void)
{
    RCC_AHB1ENR |= 3u;       /* GPIOA, GPIOB clocks */
    RCC_APB2ENR |= 1u << 4;  /* USART1 clock */
    (void)RCC_APB2ENR;       /* read back: the clock is on before the peripheral is touched */
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18); /* PA9 alternate function */
    GPIOA_AFRH = (GPIOA_AFRH & ~(15u << 4)) | (7u << 4);    /* AF7: USART1_TX */
    GPIOB_MODER = (GPIOB_MODER & ~(3u << 14)) | (2u << 14); /* PB7 alternate function */
    GPIOB_AFRL = (GPIOB_AFRL & ~(15u << 28)) | (7u << 28);  /* AF7: USART1_RX */
    USART1_CR1 = 0;
    USART1_BRR = (EP_CORE_CLOCK_HZ + EP_UART_BAUD / 2u) / EP_UART_BAUD; /* oversampling by 16 */
    USART1_CR1 = (1u << 3) | (1u << 2) | 1u;                            /* TE, RE, UE */
    ep_cortexm_io_init(EP_CORE_CLOCK_HZ);
}

static int poll_byte(void)
{
    const uint32_t isr = USART1_ISR;
    if (isr & ISR_RXNE) {
        return (int)(USART1_RDR & 0xFFu);
    }
    if (isr & ISR_ORE) {
        USART1_ICR = ISR_ORE; /* a lost byte: the frame's CRC or timeout reports it; keep receiving */
    }
    return -1;
}

int ep_io_read_byte(uint32_t timeout_ms)
{
    int b = poll_byte();
    if (b >= 0) {
        return b;
    }
    ep_idle_begin();
    const uint32_t start = ep_io_millis();
    while ((b = poll_byte()) < 0) {
        if (timeout_ms != EP_IO_FOREVER && ep_io_millis() - start >= timeout_ms) {
            break;
        }
    }
    ep_idle_end();
    return b;
}

uint32_t ep_io_read(uint8_t *buf, uint32_t n, uint32_t timeout_ms)
{
    for (uint32_t i = 0; i < n; ++i) {
        const int b = ep_io_read_byte(timeout_ms);
        if (b < 0) {
            return i;
        }
        buf[i] = (uint8_t)b;
    }
    return n;
}

void ep_io_flush(void)
{
    while (!(USART1_ISR & (1u << 6))) { /* TC: the last byte has left the shift register */
    }
}

void ep_io_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; ++i) {
        while (!(USART1_ISR & ISR_TXE)) {
        }
        USART1_TDR = data[i];
    }
}

#endif /* Cortex-M */
